//! The NATS connector against a real single JetStream node (Debian's
//! nats-server): every format delivers each reading once into the stream,
//! read back through a JetStream consumer; commands are answered to the
//! reply inbox; alarm transitions go to their own subjects, and a stream
//! that does not capture those still gets every reading; a refused
//! credential is reported clearly, never shown, and retried until the
//! server accepts it.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::Rig;
use futures_util::StreamExt;
use gateway_bench::nats_server::{NatsServer, json_seqs, read_stream};
use gateway_bench::wait_until;
use gateway_connectors::metrics::ConnectorLabel;
use gateway_connectors::nats::{Format, NatsConfig};
use gateway_model::{CmdStatus, Secret};
use prost::Message as _;
use serde_json::json;

fn cfg(url: &str, stream: &str, format: Format) -> NatsConfig {
    NatsConfig {
        stream: stream.into(),
        format,
        batch_max_values: 100,
        reconnect_min_ms: 50,
        reconnect_max_ms: 500,
        ..NatsConfig::new(&[url])
    }
}

fn label() -> ConnectorLabel {
    ConnectorLabel { connector: "up".into() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_format_puts_each_reading_into_the_stream_once_in_order_with_its_message_id() {
    let server = NatsServer::start();
    let reader = async_nats::connect(server.url()).await.unwrap();
    for (format, stream) in [(Format::JsonBatch, "BATCH"), (Format::Json, "ONE"), (Format::SparkplugB, "SPB")] {
        // A prefix per format, so each stream captures only its own subjects.
        let c =
            NatsConfig { subject_prefix: format!("{stream}.{{gateway_name}}"), ..cfg(&server.url(), stream, format) };
        let rig = Rig::start(c);
        rig.publish("line1.count", 0, 1000, 37).await;
        wait_until(30, "every value acknowledged", || rig.cursor() == 1000).await;
        let messages = read_stream(&reader, stream).await.unwrap();
        let seqs: Vec<u64> = match format {
            Format::SparkplugB => messages
                .iter()
                .flat_map(|m| gateway_connectors::sparkplug::Payload::decode(m.payload.as_slice()).unwrap().metrics)
                .map(|m| match m.properties.unwrap().values[1].value {
                    Some(gateway_connectors::sparkplug::PropertyKind::LongValue(s)) => s,
                    ref other => panic!("seq property: {other:?}"),
                })
                .collect(),
            _ => json_seqs(&messages),
        };
        assert_eq!(seqs, (0..1000).collect::<Vec<u64>>(), "{format:?}: every reading once, in order");
        let subject = match format {
            Format::Json => format!("{stream}.gw.data.line1.count"),
            Format::JsonBatch => format!("{stream}.gw.batch"),
            Format::SparkplugB => format!("{stream}.gw.spb.line1"),
        };
        assert!(messages.iter().all(|m| m.subject == subject), "{format:?}: {}", messages[0].subject);
        let first = messages[0].msg_id.as_deref().expect("a Nats-Msg-Id");
        assert!(first == "gw.up.0" || first.starts_with("gw.up.0-"), "{format:?}: {first}");
        assert_eq!(rig.acked(), 1000);
    }
}

/// An alarm of rule `hot` on `boiler.t` entering `state`.
fn alarm(state: gateway_model::AlarmState) -> gateway_model::Frame {
    use gateway_model::{AlarmInfo, EventFrame, Severity, TagId, Value};
    gateway_model::Frame::Event(Box::new(EventFrame {
        source: "alarm".into(),
        code: "high_limit".into(),
        severity: Severity::Error,
        message: "boiler.t is 95, above the limit 90".into(),
        tag: Some(TagId::new("boiler.t").unwrap()),
        ts_ns: 1_700_000_000_123_000_000,
        alarm: Some(Box::new(AlarmInfo {
            id: "hot:boiler.t".into(),
            rule: "hot".into(),
            state,
            value: Some(Value::F64(95.0)),
            limit: Some(Value::F64(90.0)),
            user: None,
            comment: None,
        })),
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alarm_transitions_reach_their_subjects_in_order_and_a_stream_without_them_still_gets_the_readings() {
    use gateway_model::AlarmState;
    let server = NatsServer::start();
    let reader = async_nats::connect(server.url()).await.unwrap();
    // The stream the connector creates captures the alarm subjects.
    let rig = Rig::start(NatsConfig { alarms: true, ..cfg(&server.url(), "PLANT", Format::JsonBatch) });
    rig.publish("line1.count", 0, 10, 10).await;
    let events = vec![alarm(AlarmState::ActiveUnacked), alarm(AlarmState::ActiveAcked)];
    rig.bus.publish(Arc::new(gateway_model::Batch::from(events))).await.unwrap();
    rig.publish("line1.count", 10, 10, 10).await;
    wait_until(30, "every frame acknowledged", || rig.cursor() == 22).await;
    let messages = read_stream(&reader, "PLANT").await.unwrap();
    let subjects: Vec<&str> = messages.iter().map(|m| m.subject.as_str()).collect();
    assert_eq!(subjects, ["gw.gw.batch", "gw.gw.alarms.hot.boiler.t", "gw.gw.alarms.hot.boiler.t", "gw.gw.batch"]);
    let states: Vec<serde_json::Value> = messages[1..3]
        .iter()
        .map(|m| serde_json::from_slice::<serde_json::Value>(&m.payload).unwrap())
        .map(|j| json!([j["seq"], j["alarm"]["state"], j["alarm"]["rule"]]))
        .collect();
    assert_eq!(states, [json!([10, "active_unacked", "hot"]), json!([11, "active_acked", "hot"])]);
    assert_eq!(messages[1].msg_id.as_deref(), Some("gw.up.10"));
    drop(rig);

    // A fleet's stream made before alarms were forwarded: readings only.
    let js = async_nats::jetstream::new(reader.clone());
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "OLD".into(),
        subjects: vec!["old.*.batch".into()],
        duplicate_window: Duration::from_secs(60),
        ..Default::default()
    })
    .await
    .unwrap();
    let rig = Rig::start(NatsConfig {
        subject_prefix: "old.{gateway_name}".into(),
        ..cfg(&server.url(), "OLD", Format::JsonBatch)
    });
    rig.publish("line1.count", 0, 10, 10).await;
    rig.bus.publish(Arc::new(gateway_model::Batch::from(vec![alarm(AlarmState::ActiveUnacked)]))).await.unwrap();
    rig.publish("line1.count", 10, 10, 10).await;
    wait_until(30, "the readings past the alarm acknowledged", || rig.cursor() == 21).await;
    let messages = read_stream(&reader, "OLD").await.unwrap();
    assert_eq!(json_seqs(&messages), (0..21).filter(|&s| s != 10).collect::<Vec<u64>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_are_answered_to_the_reply_inbox_or_on_the_ack_subject() {
    let server = NatsServer::start();
    let rig = Rig::start(cfg(&server.url(), "CMDS", Format::JsonBatch));
    let mut inbox = rig.bus.route_commands("plc1");
    let origins = Arc::new(Mutex::new(Vec::new()));
    let o = origins.clone();
    tokio::spawn(async move {
        while let Some(req) = inbox.recv().await {
            o.lock().unwrap().push(req.cmd.origin.to_string());
            match req.cmd.tag.point() {
                "setpoint" => req.reply(CmdStatus::Ok, ""),
                _ => req.reply(CmdStatus::Failed, "Modbus exception 2 (illegal data address)"),
            }
        }
    });
    wait_until(10, "the connector to connect", || rig.metrics.connected.get_or_create(&label()).get() == 1).await;
    let client = async_nats::connect(server.url()).await.unwrap();
    let mut acks = client.subscribe("gw.gw.cmd_ack.>").await.unwrap();
    client.flush().await.unwrap();
    let request = |subject: &'static str, body: String| {
        let c = client.clone();
        async move {
            // The connector subscribes once connected: retry until someone answers.
            for _ in 0..100 {
                if let Ok(r) = c.request(subject, body.clone().into()).await {
                    return serde_json::from_slice::<serde_json::Value>(&r.payload).unwrap();
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            panic!("no answer on {subject}");
        }
    };
    let ok = request("gw.gw.cmd.c1", json!({"id": "c1", "tag": "plc1.setpoint", "value": 42.5}).to_string()).await;
    assert_eq!((ok["id"].as_str(), ok["status"].as_str()), (Some("c1"), Some("ok")));
    let failed = request("gw.gw.cmd.c2", json!({"tag": "plc1.broken", "value": 1}).to_string()).await;
    assert_eq!((failed["id"].as_str(), failed["status"].as_str()), (Some("c2"), Some("failed")), "id from the subject");
    assert!(failed["message"].as_str().unwrap().contains("exception 2"));
    let no_route = request("gw.gw.cmd.c3", json!({"tag": "plc9.x", "value": 1}).to_string()).await;
    assert_eq!(no_route["status"], "no_route");
    // Without a reply inbox the answer goes to the ack subject.
    client.publish("gw.gw.cmd.c4", "{not json".into()).await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(10), acks.next()).await.unwrap().unwrap();
    assert_eq!(answer.subject.as_str(), "gw.gw.cmd_ack.c4");
    let body: serde_json::Value = serde_json::from_slice(&answer.payload).unwrap();
    assert_eq!(body["status"], "invalid", "a bad payload gets an answer, not silence");
    assert!(origins.lock().unwrap().iter().all(|o| o == "nats:up"), "audited as nats:up: {origins:?}");
    // Commands are not data: the stream holds none of them.
    let stream = read_stream(&client, "CMDS").await.unwrap();
    assert!(stream.is_empty(), "{} messages in the stream", stream.len());
}

/// Log lines, as the gateway would print them.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_credential_is_reported_clearly_and_retried_until_the_server_accepts_it() {
    let logs = Logs::default();
    let writer = logs.clone();
    tracing_subscriber::fmt().with_ansi(false).with_writer(move || writer.clone()).init();
    let mut server = NatsServer::start_with("authorization { token: \"right-one\" }");
    let mut c = cfg(&server.url(), "AUTH", Format::JsonBatch);
    c.token = Some(Secret::new("wr0ng-s3cret"));
    let rig = Rig::start(c);
    rig.publish("line1.count", 0, 200, 20).await;
    let reconnects = || rig.metrics.reconnects.get_or_create(&label()).get();
    wait_until(30, "two refused attempts", || reconnects() >= 2).await;
    assert_eq!(rig.acked(), 0);
    let text = logs.text();
    assert!(text.contains("refused this connector's credentials"), "{text}");
    assert!(text.contains("authorization violation"), "{text}");
    assert!(!text.contains("wr0ng-s3cret"), "a log line shows the token: {text}");
    // The operator gives the server the connector's token; the next attempt gets in.
    server.reconfigure("authorization { token: \"wr0ng-s3cret\" }");
    wait_until(60, "everything delivered once the credential is accepted", || rig.cursor() == 200).await;
    let reader = async_nats::ConnectOptions::with_token("wr0ng-s3cret".into()).connect(server.url()).await.unwrap();
    assert_eq!(json_seqs(&read_stream(&reader, "AUTH").await.unwrap()), (0..200).collect::<Vec<u64>>());
}

/// The accounts docs/fleet.md recommends: a gateway may publish only its own
/// data and answers and read only its own commands; the operators'
/// application may send commands to any gateway.
const LEAST_PRIVILEGE: &str = r#"
authorization {
  users = [
    { user: gw, password: "gw-pass", permissions: {
        publish: { allow: ["gw.gw.batch", "gw.gw.data.>", "gw.gw.spb.>", "gw.gw.cmd_ack.>",
                           "$JS.API.STREAM.INFO.EDGE_GATEWAY", "$JS.API.STREAM.CREATE.EDGE_GATEWAY"] },
        subscribe: { allow: ["gw.gw.cmd.>", "_INBOX.>"] },
        allow_responses: true } },
    { user: ops, password: "ops-pass", permissions: {
        publish: { allow: ["gw.*.cmd.>", "$JS.API.>"] },
        subscribe: { allow: ["_INBOX.>"] } } }
  ]
}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_user_limited_to_its_own_subjects_delivers_and_takes_commands() {
    let server = NatsServer::start_with(LEAST_PRIVILEGE);
    let c = NatsConfig {
        username: Some("gw".into()),
        password: Some(Secret::new("gw-pass")),
        ..cfg(&server.url(), "EDGE_GATEWAY", Format::JsonBatch)
    };
    let rig = Rig::start(c);
    let mut inbox = rig.bus.route_commands("plc1");
    tokio::spawn(async move {
        while let Some(req) = inbox.recv().await {
            req.reply(CmdStatus::Ok, "");
        }
    });
    rig.publish("line1.count", 0, 300, 30).await;
    wait_until(30, "every value acknowledged", || rig.cursor() == 300).await;
    let ops = async_nats::ConnectOptions::with_user_and_password("ops".into(), "ops-pass".into())
        .connect(server.url())
        .await
        .unwrap();
    assert_eq!(json_seqs(&read_stream(&ops, "EDGE_GATEWAY").await.unwrap()), (0..300).collect::<Vec<u64>>());
    let body = json!({"id": "c1", "tag": "plc1.setpoint", "value": 1}).to_string();
    let answer = ops.request("gw.gw.cmd.c1", body.into()).await.expect("an answer to the operators' command");
    let v: serde_json::Value = serde_json::from_slice(&answer.payload).unwrap();
    assert_eq!(v["status"], "ok");
}
