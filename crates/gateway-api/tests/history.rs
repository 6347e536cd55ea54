//! The history routes through the router (no socket): raw points in JSON and
//! CSV with paging, buckets with every aggregate in JSON and in a
//! spreadsheet's CSV, the value at a point in time, the errors a caller can
//! fix, who may read, and the metrics.

mod common;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use common::{Env, env_with_history};
use gateway_api::{ApiConfig, router};
use gateway_model::{Batch, DataFrame, Frame, Quality, Reason, TagId, Value, format_rfc3339_ns, now_ns};
use gateway_store::HistoryConfig;
use serde_json::Value as Json;
use tower::ServiceExt;

const S: i64 = 1_000_000_000;
const M: i64 = 60 * S;

struct Answer {
    status: StatusCode,
    content_type: String,
    next_cursor: Option<String>,
    body: String,
}

impl Answer {
    fn json(&self) -> Json {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

async fn get_as(env: &Env, token: Option<&str>, uri: &str) -> Answer {
    let mut req = Request::builder().method("GET").uri(uri);
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let resp = router(env.state.clone()).oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
    let status = resp.status();
    let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let content_type = header("content-type").unwrap_or_default();
    let next_cursor = header("x-next-cursor");
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
    Answer { status, content_type, next_cursor, body: String::from_utf8_lossy(&bytes).into_owned() }
}

async fn get(env: &Env, uri: &str) -> Answer {
    get_as(env, Some(&env.viewer), uri).await
}

fn ts(ns: i64) -> String {
    format_rfc3339_ns(ns as u64)
}

/// Publishes readings of `tag` (value i at `t0 + i` seconds) and waits until
/// history wrote them.
async fn record(env: &Env, tag: &str, t0: i64, values: &[f64]) {
    let frames: Vec<Frame> = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let q = if v.is_nan() { Quality::bad(Reason::TIMEOUT) } else { Quality::GOOD };
            Frame::Data(DataFrame::new(TagId::new(tag).unwrap(), Value::F64(*v), q, (t0 + i as i64 * S) as u64))
        })
        .collect();
    let end = env.bus.publish(Arc::new(Batch::from(frames))).await.unwrap().end;
    let h = env.history.clone().expect("an env with history");
    gateway_bench::wait_until(30, "history to write", move || h.written_seq() >= end).await;
}

async fn history_env() -> (Env, i64) {
    let env = env_with_history(HistoryConfig { commit_interval_ms: 20, ..HistoryConfig::default() }).await;
    // A minute boundary an hour ago: buckets line up with the values.
    let t0 = (now_ns() as i64 - 3600 * S) / M * M;
    (env, t0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_points_come_as_json_or_csv_and_page_past_the_limit() {
    let (env, t0) = history_env().await;
    record(&env, "h.a", t0, &[1.0, 2.5, f64::NAN, 4.0]).await;
    record(&env, "h.b", t0, &[10.0, 20.0]).await;
    let (from, to) = (ts(t0), ts(t0 + M));
    let a = get(&env, &format!("/api/v1/history?tags=h.a,h.b&from={from}&to={to}")).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let v = a.json();
    assert_eq!(v["series"][0]["tag"], "h.a");
    assert_eq!(v["series"][0]["points"][0], serde_json::json!([ts(t0), 1.0, "good"]));
    assert_eq!(v["series"][0]["points"][2][2], "bad:timeout");
    assert_eq!(v["series"][1]["points"].as_array().unwrap().len(), 2);
    assert_eq!(v["next"], Json::Null);

    // Pages of 3: h.a's first three, then its last and h.b's two.
    let a = get(&env, &format!("/api/v1/history?tags=h.*&from={from}&to={to}&limit=3")).await;
    let v = a.json();
    let next = v["next"].as_str().expect("a next page").to_owned();
    assert_eq!(v["series"][0]["points"].as_array().unwrap().len(), 3);
    let a = get(&env, &format!("/api/v1/history?tags=h.*&from={from}&to={to}&limit=3&cursor={next}")).await;
    let v = a.json();
    assert_eq!(v["series"][0]["points"][0][1], 4.0);
    assert_eq!(v["series"][1]["points"].as_array().unwrap().len(), 2);
    assert_eq!(v["next"], Json::Null);

    let a = get(&env, &format!("/api/v1/history?tags=h.a&from={from}&to={to}&format=csv&limit=2")).await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(a.content_type.starts_with("text/csv"), "{}", a.content_type);
    assert_eq!(a.body, format!("tag,ts,value,quality\r\nh.a,{},1.0,good\r\nh.a,{},2.5,good\r\n", ts(t0), ts(t0 + S)));
    assert!(a.next_cursor.is_some(), "CSV pages carry the cursor in a header");
    // Relative times: the last two hours hold them all.
    let a = get(&env, "/api/v1/history?tags=h.b&from=-2h&to=now").await;
    assert_eq!(a.json()["series"][0]["points"].as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buckets_come_with_every_aggregate_and_as_a_wide_csv() {
    let (env, t0) = history_env().await;
    // Two minutes: 1..=60 then 61..=120, with one bad reading not counted.
    let mut values: Vec<f64> = (1..=120).map(f64::from).collect();
    values[5] = f64::NAN;
    record(&env, "b.x", t0, &values).await;
    let uri = format!(
        "/api/v1/history?tags=b.x&from={}&to={}&interval=1m&agg=avg,min,max,first,last,count,sum",
        ts(t0),
        ts(t0 + 3 * M)
    );
    let a = get(&env, &uri).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let v = a.json();
    let s = &v["series"][0];
    assert_eq!(s["columns"], serde_json::json!(["ts", "avg", "min", "max", "first", "last", "count", "sum"]));
    let first_sum: f64 = (1..=60).map(f64::from).sum::<f64>() - 6.0;
    assert_eq!(s["rows"][0], serde_json::json!([ts(t0), first_sum / 59.0, 1.0, 60.0, 1.0, 60.0, 59.0, first_sum]));
    let second_sum: f64 = (61..=120).map(f64::from).sum();
    assert_eq!(
        s["rows"][1],
        serde_json::json!([ts(t0 + M), second_sum / 60.0, 61.0, 120.0, 61.0, 120.0, 60.0, second_sum])
    );
    assert_eq!(s["rows"][2], serde_json::json!([ts(t0 + 2 * M), null, null, null, null, null, null, null]));
    assert_eq!(v["aggs"].as_array().unwrap().len(), 7);
    assert!(v["sources"]["raw_s"].as_f64().is_some());

    let a =
        get(&env, &format!("{uri}&format=csv").replace("agg=avg,min,max,first,last,count,sum", "agg=min,max,min,max"))
            .await;
    let lines: Vec<&str> = a.body.split("\r\n").collect();
    assert_eq!(lines[0], "ts,b.x:min,b.x:max", "each function once");
    assert_eq!(lines[1], format!("{},1,60", ts(t0)));
    assert_eq!(lines[3], format!("{},,", ts(t0 + 2 * M)), "an empty bucket has empty cells");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_value_at_a_point_in_time_is_the_last_one_before_it() {
    let (env, t0) = history_env().await;
    record(&env, "l.x", t0, &[1.0, 2.0, 3.0]).await;
    let a = get(&env, &format!("/api/v1/history/l.x/latest?before={}", ts(t0 + S + S / 2))).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let v = a.json();
    assert_eq!((v["value"].as_f64(), v["ts"].as_str()), (Some(2.0), Some(ts(t0 + S).as_str())));
    assert_eq!(v["quality"], "good");
    let a = get(&env, "/api/v1/history/l.x/latest").await;
    assert_eq!(a.json()["value"], 3.0);
    let a = get(&env, &format!("/api/v1/history/l.x/latest?before={}", ts(t0 - S))).await;
    assert_eq!((a.status, a.json()["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("no_value")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mistakes_get_a_status_and_a_message_that_says_what_to_fix() {
    let (env, t0) = history_env().await;
    record(&env, "e.x", t0, &[1.0]).await;
    let cases = [
        ("/api/v1/history", StatusCode::BAD_REQUEST, "tags"),
        ("/api/v1/history?tags=e.x&from=yesterday", StatusCode::BAD_REQUEST, "from: \"yesterday\""),
        ("/api/v1/history?tags=e.x&from=-1h&to=-2h", StatusCode::BAD_REQUEST, "before `to`"),
        ("/api/v1/history?tags=e.x&interval=1m&agg=median", StatusCode::BAD_REQUEST, "unknown aggregate \"median\""),
        ("/api/v1/history?tags=e.x&agg=avg", StatusCode::BAD_REQUEST, "agg needs an interval"),
        ("/api/v1/history?tags=e.x&interval=1x", StatusCode::BAD_REQUEST, "interval:"),
        ("/api/v1/history?tags=e.x&format=xml", StatusCode::BAD_REQUEST, "format"),
        ("/api/v1/history?tags=e.x&limit=0", StatusCode::BAD_REQUEST, "limit"),
        ("/api/v1/history?tags=e.x&cursor=garbage", StatusCode::BAD_REQUEST, "cursor"),
        ("/api/v1/history?tags=e.x&from=-30d&interval=1s", StatusCode::UNPROCESSABLE_ENTITY, "longer interval"),
        ("/api/v1/history?tags=nope.x", StatusCode::NOT_FOUND, "has no history"),
        ("/api/v1/history?tags=e.x&colour=red", StatusCode::BAD_REQUEST, "colour"),
        ("/api/v1/history/nope.x/latest", StatusCode::NOT_FOUND, "has no history"),
    ];
    for (uri, status, says) in cases {
        let a = get(&env, uri).await;
        assert_eq!(a.status, status, "{uri}: {}", a.body);
        let msg = a.json()["error"]["message"].as_str().unwrap_or_default().to_owned();
        assert!(msg.contains(says), "{uri}: {msg:?} should say {says:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_is_a_read_and_answers_404_when_it_is_off() {
    let (env, t0) = history_env().await;
    record(&env, "r.x", t0, &[1.0]).await;
    let uri = format!("/api/v1/history?tags=r.x&from={}", ts(t0));
    assert_eq!(get_as(&env, Some(&env.viewer), &uri).await.status, StatusCode::OK);
    assert_eq!(get_as(&env, Some("egw_wrong"), &uri).await.status, StatusCode::UNAUTHORIZED);
    let metrics = get_as(&env, Some(&env.viewer), "/metrics").await.body;
    for name in ["gateway_history_values_written_total", "gateway_history_pool_size", "gateway_history_query_seconds"] {
        assert!(metrics.contains(name), "/metrics lacks {name}");
    }

    let off = common::env_with(ApiConfig::default(), Vec::new()).await;
    let a = get(&off, "/api/v1/history?tags=r.x").await;
    assert_eq!((a.status, a.json()["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("history_disabled")));
}
