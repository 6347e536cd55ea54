//! The I/O loop of one NATS connector: it connects (retrying with backoff,
//! saying clearly why a server refused it), makes sure the stream exists and
//! captures this gateway's subjects, reads the bus through the durable
//! cursor, turns deliveries into messages, publishes them to JetStream,
//! feeds the outcomes to the [`DeliveryState`] and carries out what it
//! decides (ack or rewind the cursor, pause), answers commands, and keeps
//! the metrics. The rules live in [`super::delivery`]; this file must not
//! decide when the cursor moves.

use std::pin::Pin;
use std::time::{Duration, Instant};

use async_nats::jetstream::context::{PublishAckFuture, PublishErrorKind};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{self, stream};
use async_nats::{Client, ConnectErrorKind, ConnectOptions, Event};
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use gateway_bus::{BusError, Delivery, SubscribeOptions, Subscriber};
use gateway_model::{DataFrame, Frame, now_ns};
use tokio::sync::mpsc;

use super::commands::{answer_subject, command_subject, fallback_id};
use super::config::{Auth, NatsConfig};
use super::delivery::{Acked, DeliveryState, Failure};
use super::encode::Encoder;
use crate::ConnectorContext;
use crate::commands::{Command, Commands, Outcome, answer_body, parse_json};
use crate::metrics::{CommandLabel, ConnectorLabel};

/// How often the replay budget is refilled and the backlog metrics updated.
const TICK: Duration = Duration::from_millis(100);
/// How long a failed bus read pauses reading.
const BUS_RETRY: Duration = Duration::from_secs(1);
/// How long one connection attempt to one server may take (TCP, TLS, CONNECT).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a clean stop waits for what the client still holds to go out.
const GOODBYE: Duration = Duration::from_secs(2);

/// What the connector needs besides its fields, checked when it was built.
pub(super) struct Setup {
    pub servers: Vec<async_nats::ServerAddr>,
    pub auth: Auth,
    pub tls: Option<rustls::ClientConfig>,
}

type AckOutcome = (u64, Result<jetstream::publish::PublishAck, async_nats::jetstream::context::PublishError>);
type InFlight = FuturesUnordered<Pin<Box<dyn std::future::Future<Output = AckOutcome> + Send>>>;

/// The durable subscription; made before the task starts, so nothing
/// published after [`crate::Connectors::start`] returns is missed.
pub(super) fn subscribe(name: &str, cfg: &NatsConfig, ctx: &ConnectorContext) -> Result<Subscriber, BusError> {
    let mut opts = SubscribeOptions::durable(format!("nats-{name}")).filter(cfg.filter());
    if cfg.start_from == crate::StartFrom::Oldest {
        opts = opts.from_oldest();
    }
    ctx.bus.subscribe(opts)
}

/// One running NATS connector: what the loop's branches share.
struct Worker {
    name: String,
    cfg: NatsConfig,
    prefix: String,
    label: ConnectorLabel,
    ctx: ConnectorContext,
    delivery: DeliveryState,
    encoder: Encoder,
    commands: Commands,
    /// The stream must be looked up (again) before publishing.
    check_stream: bool,
    /// Alarm transitions are sent: `alarms` is on and the stream captures them.
    send_alarms: bool,
    /// Reply inboxes of commands in progress, by command id.
    replies: Vec<(String, String)>,
}

/// The reconnection delay before attempt `attempts` (the first is immediate).
fn delay(min: Duration, max: Duration, attempts: usize) -> Duration {
    if attempts <= 1 {
        return Duration::ZERO;
    }
    let exp = u32::try_from(attempts - 2).unwrap_or(u32::MAX).min(16);
    min.saturating_mul(1 << exp).min(max)
}

/// Connects once (each server in turn); `events` gets what the client reports afterwards.
async fn connect(
    cfg: &NatsConfig,
    setup: &Setup,
    gateway: &str,
    name: &str,
    events: mpsc::UnboundedSender<Event>,
) -> Result<Client, String> {
    let (min, max) = cfg.backoff();
    let mut o = ConnectOptions::new()
        .name(format!("edge-gateway {gateway}/{name}"))
        .connection_timeout(CONNECT_TIMEOUT)
        .ping_interval(Duration::from_secs(10))
        .reconnect_delay_callback(move |attempts| delay(min, max, attempts))
        .event_callback(move |ev| {
            let _ = events.send(ev);
            async {}
        });
    o = match &setup.auth {
        Auth::None => o,
        Auth::Token(t) => o.token(t.expose().to_owned()),
        Auth::UserPassword(u, p) => o.user_and_password(u.clone(), p.expose().to_owned()),
        Auth::NKey(seed) => o.nkey(seed.expose().to_owned()),
        Auth::Creds(text) => {
            o.credentials(text.expose()).map_err(|e| format!("the .creds file cannot be used: {e}"))?
        }
    };
    if let Some(tls) = &setup.tls {
        o = o.require_tls(true).tls_client_config(tls.clone());
    }
    o.connect(setup.servers.as_slice()).await.map_err(|e| match e.kind() {
        ConnectErrorKind::AuthorizationViolation | ConnectErrorKind::Authentication => format!(
            "the server refused this connector's credentials ({e}): check token, username/password, nkey_seed or creds_file"
        ),
        ConnectErrorKind::Tls => format!("TLS failed ({e}): check ca_file, client_cert_file and the servers' certificates"),
        _ => e.to_string(),
    })
}

/// Runs one NATS connector until told to stop or the bus closes.
pub(super) async fn run(name: String, cfg: NatsConfig, setup: Setup, mut sub: Subscriber, ctx: ConnectorContext) {
    let label = ConnectorLabel { connector: name.clone() };
    let m = ctx.metrics.clone();
    m.connected.get_or_create(&label).set(0);
    let mut shutdown = ctx.shutdown.clone();
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let (min, max) = cfg.backoff();
    let mut attempt = 0usize;
    let client = loop {
        attempt += 1;
        tokio::select! {
            _ = shutdown.wait() => return,
            r = connect(&cfg, &setup, &ctx.gateway, &name, events_tx.clone()) => match r {
                Ok(c) => break c,
                Err(e) => {
                    let wait = delay(min, max, attempt + 1);
                    tracing::error!(connector = %name, error = %e, retry_in = ?wait, "Cannot connect to NATS; retrying.");
                    m.reconnects.get_or_create(&label).inc();
                    tokio::select! {
                        _ = shutdown.wait() => return,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
    };
    // Connected: the client reconnects by itself from now on and says so through `events`.
    let js = jetstream::ContextBuilder::new()
        .timeout(cfg.ack_timeout())
        .max_ack_inflight(usize::from(cfg.max_inflight) + 16)
        .backpressure_on_inflight(true)
        .build(client.clone());
    let prefix = cfg.prefix(&ctx.gateway);
    let mut w = Worker {
        label,
        delivery: DeliveryState::new(cfg.max_inflight, cfg.backoff()),
        encoder: Encoder::new(&cfg, &ctx.gateway, &name),
        commands: Commands::new(ctx.bus.clone(), format!("nats:{name}"), Duration::from_millis(cfg.command_timeout_ms)),
        prefix,
        check_stream: true,
        send_alarms: false,
        replies: Vec::new(),
        name,
        cfg,
        ctx: ctx.clone(),
    };
    w.encoder.set_max_payload(client.server_info().max_payload);
    w.on_connected();
    let mut cmd_sub = if w.cfg.commands {
        match client.subscribe(command_subject(&w.prefix)).await {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::error!(connector = %w.name, error = %e, "Cannot subscribe to the command subject; commands are not taken.");
                None
            }
        }
    } else {
        None
    };
    let mut in_flight: InFlight = FuturesUnordered::new();
    let rate = w.cfg.replay_max_rate.map(|r| r as f64);
    let mut budget = rate.unwrap_or(0.0);
    let mut last_refill = Instant::now();
    let mut bus_paused_until: Option<tokio::time::Instant> = None;
    let mut tick = tokio::time::interval(TICK);
    let mut drops_seen = 0u64;
    let mut stream_retry = min;

    loop {
        if w.check_stream && w.delivery.is_connected() {
            tokio::select! {
                _ = shutdown.wait() => break,
                ok = w.ensure_stream(&js) => {
                    if ok {
                        w.check_stream = false;
                        stream_retry = min;
                    } else {
                        tokio::select! {
                            _ = shutdown.wait() => break,
                            _ = tokio::time::sleep(stream_retry) => {}
                        }
                        stream_retry = (stream_retry * 2).min(max);
                        continue;
                    }
                }
            }
        }
        if bus_paused_until.is_some_and(|t| t <= tokio::time::Instant::now()) {
            bus_paused_until = None;
        }
        w.publish(&js, &mut in_flight).await;
        let backlog = sub.backlog();
        let catching_up = rate.is_some_and(|r| backlog as f64 > r);
        let room = bus_paused_until.is_none() && !w.check_stream && w.delivery.wants_readings();
        let read_ok = room && (!catching_up || budget > 0.0);
        let pause = w.delivery.paused_until().map(tokio::time::Instant::from_std);
        tokio::select! {
            biased;
            _ = shutdown.wait() => break,
            Some(ev) = events.recv() => w.on_event(ev),
            Some((id, r)) = in_flight.next(), if !in_flight.is_empty() => w.on_outcome(id, r, &mut sub),
            Some(msg) = next_command(&mut cmd_sub) => w.on_command(msg, &client).await,
            Some(outcome) = w.commands.next() => w.answer(outcome, None, &client).await,
            d = sub.recv(), if read_ok => match d {
                Ok(d) => {
                    if catching_up {
                        budget -= (d.end_seq() - d.first_seq()) as f64;
                    }
                    w.on_delivery(&d, &mut sub);
                }
                Err(BusError::Closed) => break,
                Err(e) => {
                    // A WAL read error (EIO, too many open files): keep going, later.
                    tracing::error!(connector = %w.name, error = %e, "Cannot read the bus; retrying in a second.");
                    bus_paused_until = Some(tokio::time::Instant::now() + BUS_RETRY);
                }
            },
            _ = sleep_until(pause), if pause.is_some() => {}
            _ = tick.tick() => {
                let now = Instant::now();
                if let Some(r) = rate {
                    budget = (budget + r * now.duration_since(last_refill).as_secs_f64()).min(r);
                }
                last_refill = now;
                w.ctx.metrics.replaying.get_or_create(&w.label).set(i64::from(catching_up));
                w.ctx.metrics.report_backlog(&w.ctx.bus, &w.label, &sub, &mut drops_seen);
            }
        }
    }
    // Unacknowledged data stays in the WAL and is sent after the next start
    // (the stream drops what it had already stored).
    let _ = tokio::time::timeout(GOODBYE, client.flush()).await;
    w.ctx.metrics.connected.get_or_create(&w.label).set(0);
}

async fn sleep_until(t: Option<tokio::time::Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

async fn next_command(sub: &mut Option<async_nats::Subscriber>) -> Option<async_nats::Message> {
    match sub {
        Some(s) => s.next().await,
        None => std::future::pending().await,
    }
}

impl Worker {
    fn on_connected(&mut self) {
        self.delivery.connected();
        self.ctx.metrics.connected.get_or_create(&self.label).set(1);
    }

    fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Connected => {
                tracing::info!(connector = %self.name, "Connected to NATS.");
                self.on_connected();
            }
            Event::Disconnected => {
                tracing::warn!(connector = %self.name, "Lost the NATS server; reconnecting. Data waits in the WAL.");
                self.delivery.disconnected();
                self.ctx.metrics.connected.get_or_create(&self.label).set(0);
                self.ctx.metrics.reconnects.get_or_create(&self.label).inc();
            }
            Event::ServerError(async_nats::ServerError::AuthorizationViolation) => {
                tracing::error!(connector = %self.name, "The NATS server refused this connector's credentials (authorization violation): check token, username/password, nkey_seed or creds_file; retrying.");
            }
            Event::ClientError(e) => {
                tracing::warn!(connector = %self.name, error = %e, "NATS connection attempt failed; retrying.");
            }
            Event::ServerError(e) => {
                tracing::warn!(connector = %self.name, error = %e, "The NATS server reported an error.")
            }
            other => tracing::debug!(connector = %self.name, event = %other, "NATS client event."),
        }
    }

    /// Looks the stream up, creates it if allowed and absent, and checks that
    /// it captures this gateway's data subject. `false`: not now (logged).
    async fn ensure_stream(&mut self, js: &jetstream::Context) -> bool {
        let name = &self.cfg.stream;
        let probe = self.encoder.sample_subject();
        let info = match js.get_stream(name).await {
            Ok(mut s) => match s.info().await {
                Ok(i) => i.clone(),
                Err(e) => {
                    tracing::warn!(connector = %self.name, stream = %name, error = %e, "Cannot read the stream's configuration; retrying.");
                    return false;
                }
            },
            Err(e) if is_not_found(&e) && self.cfg.create_stream => {
                let config = stream::Config {
                    name: name.clone(),
                    subjects: self.cfg.stream_subjects(),
                    num_replicas: usize::from(self.cfg.replicas),
                    max_age: Duration::from_secs(self.cfg.max_age_s),
                    max_bytes: if self.cfg.max_bytes == 0 {
                        -1
                    } else {
                        i64::try_from(self.cfg.max_bytes).unwrap_or(i64::MAX)
                    },
                    duplicate_window: Duration::from_secs(self.cfg.duplicate_window_s),
                    storage: stream::StorageType::File,
                    ..Default::default()
                };
                match js.create_stream(config).await {
                    Ok(mut s) => {
                        tracing::info!(connector = %self.name, stream = %name, replicas = self.cfg.replicas, subjects = ?self.cfg.stream_subjects(), "Created the JetStream stream.");
                        s.info().await.cloned().unwrap_or_else(|_| s.cached_info().clone())
                    }
                    Err(e) => {
                        tracing::error!(connector = %self.name, stream = %name, error = %e, "Cannot create the JetStream stream; retrying.");
                        return false;
                    }
                }
            }
            Err(e) if is_not_found(&e) => {
                tracing::error!(connector = %self.name, stream = %name, "The JetStream stream does not exist and create_stream is false; waiting for it.");
                return false;
            }
            Err(e) => {
                tracing::warn!(connector = %self.name, stream = %name, error = %e, "Cannot look the JetStream stream up (a leader election?); retrying.");
                return false;
            }
        };
        if !info.config.subjects.iter().any(|f| subject_matches(f, &probe)) {
            tracing::error!(
                connector = %self.name, stream = %name, subjects = ?info.config.subjects, subject = %probe,
                "The JetStream stream does not capture this gateway's subjects: add them to the stream (or set subject_prefix); waiting."
            );
            return false;
        }
        let alarms = self.encoder.sample_alarm_subject();
        self.send_alarms = self.cfg.alarms && info.config.subjects.iter().any(|f| subject_matches(f, &alarms));
        if self.cfg.alarms && !self.send_alarms {
            tracing::warn!(
                connector = %self.name, stream = %name, subjects = ?info.config.subjects, subject = %alarms,
                "The JetStream stream does not capture this gateway's alarm subjects: alarms are not forwarded (add {}.alarms.> to the stream, or set alarms = false).",
                self.prefix
            );
        }
        if info.config.duplicate_window.is_zero() {
            tracing::warn!(connector = %self.name, stream = %name, "The stream has no duplicate window: messages sent again after a failure are stored twice.");
        }
        tracing::info!(connector = %self.name, stream = %name, replicas = info.config.num_replicas, "Publishing to the JetStream stream.");
        true
    }

    /// Publishes what the delivery state lets go.
    async fn publish(&mut self, js: &jetstream::Context, in_flight: &mut InFlight) {
        if self.check_stream {
            return;
        }
        let mut sent = (0u64, 0u64);
        loop {
            let now = Instant::now();
            let Some(out) = self.delivery.next(now).cloned() else { break };
            let Some(id) = self.delivery.published(now) else { break };
            sent = (sent.0 + 1, sent.1 + out.values);
            let publish = PublishMessage::build().payload(out.payload).message_id(&out.msg_id);
            match js.send_publish(out.subject, publish).await {
                Ok(ack) => in_flight.push(await_ack(id, ack)),
                Err(e) => in_flight.push(async move { (id, Err(e)) }.boxed()),
            }
        }
        if sent.0 > 0 {
            let m = &self.ctx.metrics;
            m.messages_sent.get_or_create(&self.label).inc_by(sent.0);
            m.values_sent.get_or_create(&self.label).inc_by(sent.1);
        }
    }

    fn on_outcome(
        &mut self,
        id: u64,
        r: Result<jetstream::publish::PublishAck, async_nats::jetstream::context::PublishError>,
        sub: &mut Subscriber,
    ) {
        match r {
            Ok(_) => {
                if let Some(a) = self.delivery.acked(id) {
                    self.on_acked(a, sub);
                }
            }
            Err(e) => {
                let kind = e.kind();
                if let Failure::Restart { pause } = self.delivery.failed(id, Instant::now()) {
                    match kind {
                        PublishErrorKind::StreamNotFound => {
                            tracing::warn!(connector = %self.name, stream = %self.cfg.stream, ?pause, "No stream answered (a leader election, or the stream is gone); sending again from the last acknowledged reading.");
                            self.check_stream = true;
                        }
                        PublishErrorKind::TimedOut | PublishErrorKind::BrokenPipe => {
                            tracing::warn!(connector = %self.name, error = %e, ?pause, "A publish was not acknowledged in time; sending again from the last acknowledged reading.");
                        }
                        _ => {
                            tracing::error!(connector = %self.name, error = %e, ?pause, "The stream refused a message; sending again from the last acknowledged reading.");
                        }
                    }
                    sub.rewind();
                }
            }
        }
    }

    fn on_acked(&mut self, a: Acked, sub: &mut Subscriber) {
        let m = &self.ctx.metrics;
        m.values_acked.get_or_create(&self.label).inc_by(a.values);
        m.ack_latency.get_or_create(&self.label).observe(a.published_at.elapsed().as_secs_f64());
        self.ack(a.ack, sub);
    }

    fn ack(&self, end: Option<u64>, sub: &mut Subscriber) {
        if let Some(end) = end
            && let Err(e) = sub.ack(end)
        {
            tracing::warn!(connector = %self.name, error = %e, "Cannot move the bus cursor.");
        }
    }

    fn on_delivery(&mut self, d: &Delivery, sub: &mut Subscriber) {
        let frames: Vec<(u64, &DataFrame)> = d.frames().filter_map(|(s, f)| f.as_data().map(|df| (s, df))).collect();
        let mut messages = self.encoder.readings(&frames, now_ns() / 1_000_000);
        if self.send_alarms {
            for (seq, f) in d.frames() {
                if let Frame::Event(e) = f
                    && let Some(m) = self.encoder.alarm(seq, e)
                {
                    messages.push(m);
                }
            }
        }
        let ack = self.delivery.queue_delivery(d.end_seq(), messages);
        self.ack(ack, sub);
    }

    async fn on_command(&mut self, msg: async_nats::Message, client: &Client) {
        let reply = msg.reply.as_ref().map(|r| r.to_string());
        match parse_json(fallback_id(msg.subject.as_str()), &msg.payload) {
            Command::Write { id, tag, value } => {
                if let Some(outcome) = self.commands.start(id.clone(), tag, value) {
                    self.answer(outcome, reply.as_deref(), client).await;
                } else if let Some(r) = reply {
                    self.replies.push((id, r));
                }
            }
            Command::Invalid { id, error } => {
                self.answer(Outcome::Invalid { id, error }, reply.as_deref(), client).await
            }
            Command::Rebirth => {}
        }
    }

    async fn answer(&mut self, outcome: Outcome, reply: Option<&str>, client: &Client) {
        let (id, status, body) = answer_body(outcome);
        let reply = match reply {
            Some(r) => Some(r.to_owned()),
            None => self.replies.iter().position(|(i, _)| *i == id).map(|i| self.replies.swap_remove(i).1),
        };
        let subject = answer_subject(&self.prefix, reply.as_deref(), &id);
        let label = CommandLabel { connector: self.name.clone(), status: status.into() };
        self.ctx.metrics.commands.get_or_create(&label).inc();
        if let Err(e) = client.publish(subject, body.into()).await {
            tracing::warn!(connector = %self.name, id = %id, error = %e, "Cannot send a command's answer.");
        }
    }
}

fn await_ack(id: u64, ack: PublishAckFuture) -> Pin<Box<dyn std::future::Future<Output = AckOutcome> + Send>> {
    async move { (id, ack.await) }.boxed()
}

fn is_not_found(e: &async_nats::jetstream::context::GetStreamError) -> bool {
    matches!(e.kind(), async_nats::jetstream::context::GetStreamErrorKind::JetStream(j)
        if j.error_code() == async_nats::jetstream::ErrorCode::STREAM_NOT_FOUND)
}

/// Whether subject filter `filter` (with `*` and `>`) matches `subject`.
pub(super) fn subject_matches(filter: &str, subject: &str) -> bool {
    let mut f = filter.split('.');
    let mut s = subject.split('.');
    loop {
        match (f.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_filters_match_as_nats_matches_them() {
        assert!(subject_matches("gw.*.batch", "gw.line1.batch"));
        assert!(subject_matches("gw.*.data.>", "gw.line1.data.plc1.temp"));
        assert!(!subject_matches("gw.*.data.>", "gw.line1.data"));
        assert!(!subject_matches("gw.*.batch", "gw.line1.batch.x"));
        assert!(subject_matches(">", "a"));
    }

    #[test]
    fn reconnection_delays_start_at_once_then_double_up_to_the_maximum() {
        let (min, max) = (Duration::from_millis(100), Duration::from_millis(350));
        let d: Vec<u128> = (1..=5).map(|a| delay(min, max, a).as_millis()).collect();
        assert_eq!(d, [0, 100, 200, 350, 350]);
    }
}
