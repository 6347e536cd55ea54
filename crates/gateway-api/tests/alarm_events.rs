//! `GET /api/v1/alarms/events` through the router (no socket): alarm
//! transitions published on the bus come back from the journal newest first
//! with every field, filtered by priority, alarm and tag, in pages; the
//! caller's mistakes get a 400 that says what to fix; it is a read; and it
//! answers 503 when history, which keeps the journal, is off.

mod common;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use common::{Env, env_with_history};
use gateway_api::{ApiConfig, router};
use gateway_model::{
    AlarmInfo, AlarmState, Batch, EventFrame, Frame, Severity, TagId, Value, format_rfc3339_ns, now_ns,
};
use gateway_store::HistoryConfig;
use serde_json::{Value as Json, json};
use tower::ServiceExt;

const S: i64 = 1_000_000_000;

async fn get_as(env: &Env, token: Option<&str>, uri: &str) -> (StatusCode, Json) {
    let mut req = Request::builder().method("GET").uri(uri);
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let resp = router(env.state.clone()).oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)));
    (status, body)
}

async fn get(env: &Env, uri: &str) -> (StatusCode, Json) {
    get_as(env, Some(&env.viewer), uri).await
}

fn ts(ns: i64) -> String {
    format_rfc3339_ns(ns as u64)
}

fn transition(ts: i64, id: &str, tag: Option<&str>, code: &str, state: AlarmState, priority: Severity) -> Frame {
    Frame::Event(Box::new(EventFrame {
        source: "alarm".into(),
        code: code.into(),
        severity: priority,
        message: format!("{id} {code}").into(),
        tag: tag.map(|t| TagId::new(t).unwrap()),
        ts_ns: ts as u64,
        alarm: Some(Box::new(AlarmInfo {
            id: id.into(),
            rule: id.split(':').next().unwrap().into(),
            state,
            value: Some(Value::F64(91.5)),
            limit: Some(Value::F64(90.0)),
            user: None,
            comment: None,
        })),
    }))
}

/// An env with history, and `frames` published and written.
async fn journal_env(frames: Vec<Frame>) -> Env {
    let env = env_with_history(HistoryConfig { commit_interval_ms: 20, ..HistoryConfig::default() }).await;
    let end = env.bus.publish(Arc::new(Batch::from(frames))).await.unwrap().end;
    let h = env.history.clone().expect("an env with history");
    gateway_bench::wait_until(30, "history to write", move || h.written_seq() >= end).await;
    env
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transitions_come_back_newest_first_with_every_field_filtered_and_paged() {
    let t0 = (now_ns() as i64) - 3600 * S;
    let mut acked = transition(t0 + S, "hi:l.t", Some("l.t"), "acked", AlarmState::ActiveAcked, Severity::Error);
    if let Frame::Event(e) = &mut acked {
        let a = e.alarm.as_mut().unwrap();
        a.value = None;
        a.limit = None;
        a.user = Some("alice".into());
        a.comment = Some("crew on the way".into());
    }
    let frames = vec![
        transition(t0, "hi:l.t", Some("l.t"), "raised", AlarmState::ActiveUnacked, Severity::Error),
        acked,
        transition(t0 + 2 * S, "disk:data", None, "raised", AlarmState::ActiveUnacked, Severity::Critical),
        transition(t0 + 3 * S, "lo:l.p", Some("l.p"), "raised", AlarmState::ActiveUnacked, Severity::Info),
    ];
    let env = journal_env(frames).await;
    let range = format!("from={}&to={}", ts(t0), ts(t0 + 60 * S));

    let (status, v) = get(&env, &format!("/api/v1/alarms/events?{range}")).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let ids: Vec<&str> = v["events"].as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["lo:l.p", "disk:data", "hi:l.t", "hi:l.t"], "newest first");
    assert_eq!(
        v["events"][2],
        json!({
            "ts": ts(t0 + S), "id": "hi:l.t", "rule": "hi", "tag": "l.t", "event": "acked",
            "state": "active_acked", "priority": "high", "value": null, "limit": null,
            "user": "alice", "comment": "crew on the way", "message": "hi:l.t acked",
        })
    );
    assert_eq!(v["events"][1]["tag"], Json::Null, "a system alarm watches no tag");
    assert_eq!((v["events"][3]["value"].as_f64(), v["events"][3]["limit"].as_f64()), (Some(91.5), Some(90.0)));
    assert_eq!(v["next"], Json::Null);

    let count = |v: &Json| v["events"].as_array().unwrap().len();
    let (_, v) = get(&env, &format!("/api/v1/alarms/events?{range}&priority=high")).await;
    assert_eq!(count(&v), 3, "high and critical: {v}");
    let (_, v) = get(&env, &format!("/api/v1/alarms/events?{range}&priority=critical")).await;
    assert_eq!(v["events"][0]["id"], "disk:data");
    let (_, v) = get(&env, &format!("/api/v1/alarms/events?{range}&alarm=hi:l.t")).await;
    assert_eq!(count(&v), 2);
    let (_, v) = get(&env, &format!("/api/v1/alarms/events?{range}&tag=l.p")).await;
    assert_eq!((count(&v), v["events"][0]["priority"].as_str()), (1, Some("low")));
    // The default range is the last 24 hours.
    let (_, v) = get(&env, "/api/v1/alarms/events").await;
    assert_eq!(count(&v), 4);

    // Pages of 3 then 1, nothing twice.
    let (_, v) = get(&env, &format!("/api/v1/alarms/events?{range}&limit=3")).await;
    assert_eq!(count(&v), 3);
    let next = v["next"].as_str().expect("a next page").to_owned();
    let (_, v) = get(&env, &format!("/api/v1/alarms/events?{range}&limit=3&cursor={next}")).await;
    assert_eq!((count(&v), v["events"][0]["event"].as_str()), (1, Some("raised")));
    assert_eq!(v["events"][0]["ts"], ts(t0));
    assert_eq!(v["next"], Json::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mistakes_get_a_400_that_says_what_to_fix_and_it_is_a_read() {
    let env = journal_env(Vec::new()).await;
    let cases = [
        ("/api/v1/alarms/events?priority=urgent", "priority: \"urgent\""),
        ("/api/v1/alarms/events?from=yesterday", "from: \"yesterday\""),
        ("/api/v1/alarms/events?from=-1h&to=-2h", "before `to`"),
        ("/api/v1/alarms/events?limit=0", "limit"),
        ("/api/v1/alarms/events?limit=10001", "limit must be 1 to 10000"),
        ("/api/v1/alarms/events?cursor=garbage", "cursor"),
        ("/api/v1/alarms/events?colour=red", "colour"),
    ];
    for (uri, says) in cases {
        let (status, v) = get(&env, uri).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {v}");
        let msg = v["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains(says), "{uri}: {msg:?} should say {says:?}");
    }
    let (status, v) = get(&env, "/api/v1/alarms/events?limit=10000").await;
    assert_eq!((status, v["events"].as_array().map(Vec::len)), (StatusCode::OK, Some(0)));
    assert_eq!(get_as(&env, Some("egw_wrong"), "/api/v1/alarms/events").await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_journal_answers_503_when_history_is_off() {
    let off = common::env_with(ApiConfig::default(), Vec::new()).await;
    let (status, v) = get(&off, "/api/v1/alarms/events").await;
    assert_eq!((status, v["error"]["code"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("history_disabled")));
}
