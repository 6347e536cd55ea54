//! `/api/v1/alarms` through the router: rules made by an admin, raised by
//! readings published on the bus, acknowledged and shelved by an operator,
//! refused to viewers, audited, and events on the bus for each transition.

mod common;

use std::sync::Arc;

use common::{Env, call_as, env_with};
use gateway_api::ApiConfig;
use gateway_bus::{Filter, SubscribeOptions};
use gateway_model::{AlarmState, Batch, DataFrame, Frame, FrameKind, Quality, TagId, Value, now_ns};
use serde_json::{Value as Json, json};

async fn publish(env: &Env, tag: &str, v: f64) {
    let f = DataFrame::new(TagId::new(tag).unwrap(), Value::F64(v), Quality::GOOD, now_ns());
    env.bus.publish(Arc::new(Batch::from(vec![Frame::Data(f)]))).await.unwrap();
}

async fn active(env: &Env) -> Json {
    call_as(env, Some(&env.viewer), "GET", "/api/v1/alarms/active", None).await.1
}

async fn wait_active(env: &Env, what: &str, f: impl Fn(&Json) -> bool) -> Json {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let a = active(env).await;
        if f(&a) {
            return a;
        }
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}: {a}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_raises_an_alarm_that_an_operator_acknowledges_and_shelves() {
    let env = env_with(ApiConfig::default(), Vec::new()).await;
    let mut events = env
        .bus
        .subscribe(SubscribeOptions::lossy("test-events", 1 << 16).filter(Filter::all().kinds([FrameKind::Event])))
        .unwrap();
    let rule = json!({"name": "hot", "tag": "boiler*.temp", "kind": "high", "limit": 90, "deadband": 2.0, "priority": "critical"});
    let (st, body) = call_as(&env, Some(&env.operator), "POST", "/api/v1/alarms/rules", Some(rule.clone())).await;
    assert_eq!(st, 403, "rules are the admin's: {body}");
    let (st, body) = call_as(&env, Some(&env.admin), "POST", "/api/v1/alarms/rules", Some(rule.clone())).await;
    assert_eq!(st, 201, "{body}");
    assert_eq!(body["source"], "api");
    let (st, _) = call_as(&env, Some(&env.admin), "POST", "/api/v1/alarms/rules", Some(rule)).await;
    assert_eq!(st, 409, "a second rule of that name");
    let bad = json!({"name": "x", "tag": "a.b", "kind": "high"});
    let (st, body) = call_as(&env, Some(&env.admin), "POST", "/api/v1/alarms/rules", Some(bad)).await;
    assert_eq!(st, 400);
    assert!(body["error"]["message"].as_str().unwrap().starts_with("limit"), "{body}");

    publish(&env, "boiler1.temp", 85.0).await;
    publish(&env, "boiler1.temp", 95.5).await;
    let a = wait_active(&env, "the alarm", |a| a["count"] == 1).await;
    let alarm = &a["alarms"][0];
    assert_eq!(alarm["id"], "hot:boiler1.temp");
    assert_eq!(alarm["state"], "active_unacked");
    assert_eq!(alarm["priority"], "critical");
    assert_eq!(alarm["value"], 95.5);

    let id = "hot:boiler1.temp";
    let (st, _) = call_as(&env, Some(&env.viewer), "POST", &format!("/api/v1/alarms/{id}/ack"), None).await;
    assert_eq!(st, 403, "viewers do not acknowledge");
    let (st, body) = call_as(
        &env,
        Some(&env.operator),
        "POST",
        &format!("/api/v1/alarms/{id}/ack"),
        Some(json!({"comment": "going"})),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["state"], "active_acked");
    assert_eq!(body["acked_by"], "token:test-operator");
    let (st, body) = call_as(&env, Some(&env.operator), "POST", &format!("/api/v1/alarms/{id}/ack"), None).await;
    assert_eq!(st, 409, "nothing left to acknowledge: {body}");
    let (st, _) = call_as(&env, Some(&env.operator), "POST", "/api/v1/alarms/hot:nope.x/ack", None).await;
    assert_eq!(st, 404);

    // Shelving needs a reason and a bounded duration.
    let url = format!("/api/v1/alarms/{id}/shelve");
    let (st, _) =
        call_as(&env, Some(&env.operator), "POST", &url, Some(json!({"duration": "1h", "reason": " "}))).await;
    assert_eq!(st, 400);
    let (st, _) =
        call_as(&env, Some(&env.operator), "POST", &url, Some(json!({"duration": "30d", "reason": "x"}))).await;
    assert_eq!(st, 400);
    let (st, body) =
        call_as(&env, Some(&env.operator), "POST", &url, Some(json!({"duration": "1h", "reason": "sensor swap"})))
            .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["state"], "shelved");
    assert_eq!(body["shelve_reason"], "sensor swap");
    let (st, body) = call_as(&env, Some(&env.operator), "POST", &format!("/api/v1/alarms/{id}/unshelve"), None).await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["state"], "active_unacked", "still above the limit: back, and to be acknowledged again");

    // Bulk acknowledgement says what it could not do.
    let ids = json!({"ids": [id, "nope:a.b"], "comment": "shift change"});
    let (st, body) = call_as(&env, Some(&env.operator), "POST", "/api/v1/alarms/ack", Some(ids)).await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["acked"], json!([id]));
    assert_eq!(body["refused"][0]["id"], "nope:a.b");

    // Clearing (below limit - deadband) after acknowledgement returns it to normal.
    publish(&env, "boiler1.temp", 88.5).await;
    publish(&env, "boiler1.temp", 87.0).await;
    wait_active(&env, "the alarm to clear", |a| a["count"] == 0).await;

    // Each transition was an event on the bus, in order.
    let mut seen = Vec::new();
    while seen.len() < 6 {
        let d = tokio::time::timeout(std::time::Duration::from_secs(10), events.recv()).await.unwrap().unwrap();
        for (_, f) in d.frames() {
            if let Frame::Event(e) = f {
                let a = e.alarm.as_ref().unwrap();
                seen.push((e.code.to_string(), a.state, a.user.as_deref().map(str::to_owned)));
            }
        }
    }
    let codes: Vec<&str> = seen.iter().map(|(c, _, _)| c.as_str()).collect();
    assert_eq!(codes, ["raised", "acked", "shelved", "unshelved", "acked", "cleared"]);
    assert_eq!(seen[1].2.as_deref(), Some("token:test-operator"));
    assert_eq!(seen[5].1, AlarmState::Normal);

    // Every write was audited, the refused ones too.
    let (_, audit) = call_as(&env, Some(&env.admin), "GET", "/api/v1/audit?limit=100", None).await;
    let actions: Vec<&str> =
        audit["entries"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    for want in ["alarm_rule.create", "alarm.ack", "alarm.shelve", "alarm.unshelve"] {
        assert!(actions.contains(&want), "{want} not in {actions:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_made_over_the_api_persist_and_can_be_replaced_and_deleted() {
    let env = env_with(ApiConfig::default(), Vec::new()).await;
    let rule = json!({"name": "low_tank", "tag": "tank.level", "kind": "low", "limit": 10});
    let (st, _) = call_as(&env, Some(&env.admin), "PUT", "/api/v1/alarms/rules/low_tank", Some(rule)).await;
    assert_eq!(st, 201);
    let (_, list) = call_as(&env, Some(&env.viewer), "GET", "/api/v1/alarms/rules", None).await;
    assert_eq!(list["rules"].as_array().unwrap().len(), 1);
    assert_eq!(env.store.list_alarm_rules().await.unwrap().len(), 1, "kept in the database");
    // A rule on one tag has its alarm at once, normal.
    let (_, all) = call_as(&env, Some(&env.viewer), "GET", "/api/v1/alarms", None).await;
    assert_eq!(all["alarms"][0]["state"], "normal");
    let changed = json!({"tag": "tank.level", "kind": "low", "limit": 20, "enabled": false});
    let (st, body) = call_as(&env, Some(&env.admin), "PUT", "/api/v1/alarms/rules/low_tank", Some(changed)).await;
    assert_eq!(st, 200, "{body}");
    let (_, all) = call_as(&env, Some(&env.viewer), "GET", "/api/v1/alarms?state=disabled", None).await;
    assert_eq!(all["count"], 1, "{all}");
    let (st, _) = call_as(
        &env,
        Some(&env.admin),
        "PUT",
        "/api/v1/alarms/rules/other",
        Some(json!({"name": "x", "tag": "a.b", "kind": "bad_quality"})),
    )
    .await;
    assert_eq!(st, 400, "the body's name must be the path's");
    let (st, _) = call_as(
        &env,
        Some(&env.admin),
        "POST",
        "/api/v1/alarms/rules",
        Some(json!({"name": "system.mine", "tag": "a.b", "kind": "bad_quality"})),
    )
    .await;
    assert_eq!(st, 400, "system. names are reserved");
    let (st, _) = call_as(&env, Some(&env.admin), "DELETE", "/api/v1/alarms/rules/low_tank", None).await;
    assert_eq!(st, 204);
    let (st, _) = call_as(&env, Some(&env.admin), "DELETE", "/api/v1/alarms/rules/low_tank", None).await;
    assert_eq!(st, 404);
    assert!(env.store.list_alarm_rules().await.unwrap().is_empty());
    let (_, all) = call_as(&env, Some(&env.viewer), "GET", "/api/v1/alarms", None).await;
    assert_eq!(all["count"], 0, "its alarms went with it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_requests_get_a_400_and_change_nothing() {
    let env = env_with(ApiConfig::default(), Vec::new()).await;
    let rule = json!({"name": "hot", "tag": "t.x", "kind": "high", "limit": 1});
    assert_eq!(call_as(&env, Some(&env.admin), "POST", "/api/v1/alarms/rules", Some(rule)).await.0, 201);
    publish(&env, "t.x", 5.0).await;
    wait_active(&env, "the alarm", |a| a["count"] == 1).await;
    let url = "/api/v1/alarms/hot:t.x/ack";
    let long = "x".repeat(1001);
    let cases = [
        (url, json!({"comment": long})),
        (url, json!({"comment": "ok", "colour": "red"})),
        (url, json!("not an object")),
        ("/api/v1/alarms/ack", json!({"ids": []})),
        ("/api/v1/alarms/ack", json!({"ids": vec!["hot:t.x"; 1001]})),
        ("/api/v1/alarms/hot:t.x/shelve", json!({"duration": "soon", "reason": "x"})),
        ("/api/v1/alarms/rules", json!({"name": "n", "tag": "a.b", "kind": "high", "limit": 1, "colour": 1})),
        ("/api/v1/alarms/rules", json!({"name": "n".repeat(65), "tag": "a.b", "kind": "bad_quality"})),
    ];
    for (uri, body) in cases {
        let (st, b) = call_as(&env, Some(&env.admin), "POST", uri, Some(body.clone())).await;
        assert_eq!(st, 400, "{uri} {body}: {b}");
        assert!(b["error"]["code"].is_string() && b["error"]["message"].is_string(), "{b}");
    }
    let a = active(&env).await;
    assert_eq!(a["alarms"][0]["state"], "active_unacked", "nothing was acknowledged or shelved: {a}");
    let (_, rules) = call_as(&env, Some(&env.viewer), "GET", "/api/v1/alarms/rules", None).await;
    assert_eq!(rules["rules"].as_array().unwrap().len(), 1);
}
