//! The I/O loop of one MQTT connector: it reads the bus (the durable cursor,
//! and during a replay the lossy live feed beside it), turns deliveries into
//! messages, hands them to the link, feeds the link's events to the
//! [`DeliveryState`] and carries out what it decides (ack or rewind the
//! cursor, new Sparkplug births, pauses), answers commands, and keeps the
//! metrics. The rules themselves live in [`super::delivery`]; this file must
//! not decide when the cursor moves.

use std::sync::Arc;
use std::time::{Duration, Instant};

use gateway_bus::{BusError, Delivery, Filter, SubscribeOptions, Subscriber};
use gateway_model::{DataFrame, Frame, now_ns};

use super::commands::{self, Command, Commands, Outcome};
use super::config::{Endpoint, Format, MqttConfig};
use super::delivery::{Confirmed, DeliveryState, Kind, Refusal, Session};
use super::edge_node::EdgeNode;
use super::encode::{self, Encoder};
use super::link::{Link, LinkEvent, LinkOptions};
use crate::ConnectorContext;
use crate::metrics::{CommandLabel, ConnectorLabel};

/// How often the replay budget is refilled and the backlog metrics updated.
const TICK: Duration = Duration::from_millis(100);
/// How long a failed bus read pauses reading.
const BUS_RETRY: Duration = Duration::from_secs(1);
/// How long a clean stop waits for the broker to take the goodbye.
const GOODBYE: Duration = Duration::from_secs(2);

/// One running MQTT connector: what the loop's branches share.
struct Worker {
    name: String,
    cfg: MqttConfig,
    label: ConnectorLabel,
    ctx: ConnectorContext,
    delivery: DeliveryState,
    encoder: Encoder,
    /// Sparkplug only.
    node: Option<EdgeNode>,
    commands: Commands,
    /// During a replay: the lossy live subscription and the position it started at.
    live: Option<(Subscriber, u64)>,
    /// Deliveries read from the cursor but held to go out together
    /// (`batch_linger_ms` or the bus's tuned linger), and when they must go.
    held: Vec<Delivery>,
    held_values: usize,
    held_until: Option<tokio::time::Instant>,
}

/// The durable subscription; made before the task starts, so nothing
/// published after [`crate::Connectors::start`] returns is missed.
pub(super) fn subscribe(name: &str, cfg: &MqttConfig, ctx: &ConnectorContext) -> Result<Subscriber, BusError> {
    // Readings go out as soon as they are published, not a group commit
    // later; the cursor still moves only past what is durable and confirmed,
    // and the log never gives a sequence number seen here to other data.
    let mut opts = SubscribeOptions::durable(format!("mqtt-{name}")).ahead_of_durability().filter(cfg.filter());
    if cfg.start_from == super::StartFrom::Oldest {
        opts = opts.from_oldest();
    }
    ctx.bus.subscribe(opts)
}

/// Runs one MQTT connector until told to stop or the bus closes.
pub(super) async fn run(
    name: String,
    cfg: MqttConfig,
    endpoint: Endpoint,
    tls: Option<rustls::ClientConfig>,
    mut sub: Subscriber,
    ctx: ConnectorContext,
) {
    let sparkplug = cfg.format == Format::SparkplugB;
    // Reconnections and pauses after a refusal back off alike.
    let backoff = (Duration::from_millis(cfg.reconnect_min_ms), Duration::from_millis(cfg.reconnect_max_ms));
    let node = sparkplug.then(|| {
        let node_id = cfg.sparkplug_edge_node_id.clone().unwrap_or_else(|| name.clone());
        EdgeNode::new(&cfg.sparkplug_group_id, &node_id, &ctx.data_dir, &name)
    });
    let mut link = Link::start(
        cfg.protocol,
        LinkOptions {
            client_id: cfg.client_id.clone().unwrap_or_else(|| format!("edge-gateway-{name}")),
            host: endpoint.host,
            port: endpoint.port,
            keep_alive: Duration::from_secs(cfg.keep_alive_s),
            // Sparkplug asks for a clean session on every connect.
            clean: cfg.clean_session || sparkplug,
            session_expiry_s: cfg.session_expiry_s,
            inflight: cfg.max_inflight,
            credentials: cfg.credentials().map(|(u, p)| (u, p.expose().to_owned())),
            tls: tls.map(Arc::new),
        },
        backoff,
        node.as_ref().map(EdgeNode::will),
    );
    let mut w = Worker {
        label: ConnectorLabel { connector: name.clone() },
        delivery: DeliveryState::new(cfg.max_inflight, backoff),
        encoder: Encoder::new(&cfg),
        commands: Commands::new(ctx.bus.clone(), format!("mqtt:{name}"), Duration::from_millis(cfg.command_timeout_ms)),
        node,
        live: None,
        held: Vec::new(),
        held_values: 0,
        held_until: None,
        name,
        cfg,
        ctx: ctx.clone(),
    };
    let mut shutdown = ctx.shutdown.clone();
    let filter = w.cfg.filter();
    // The replay budget: values the backlog may still send this second.
    let mut budget = w.cfg.replay_max_rate as f64;
    let mut last_refill = Instant::now();
    let mut bus_paused_until: Option<tokio::time::Instant> = None;
    let mut tick = tokio::time::interval(TICK);
    let mut drops_seen = 0u64;
    w.metric_connected(false);

    loop {
        if bus_paused_until.is_some_and(|t| t <= tokio::time::Instant::now()) {
            bus_paused_until = None;
        }
        w.hand_over(&link);
        let room = bus_paused_until.is_none() && w.delivery.wants_readings();
        let replaying = w.live.is_some();
        let replay_ok = room && (!replaying || budget > 0.0);
        tokio::select! {
            biased;
            _ = shutdown.wait() => break,
            ev = link.next() => match ev {
                None => {
                    tracing::error!(connector = %w.name, "The MQTT connection task ended; the connector stops.");
                    break;
                }
                Some(ev) => {
                    w.on_link_event(ev, &link, &mut sub, &filter);
                    // Bounded, so a flood of events cannot starve the other branches.
                    for _ in 0..256 {
                        let Some(ev) = link.try_next() else { break };
                        w.on_link_event(ev, &link, &mut sub, &filter);
                    }
                }
            },
            Some(outcome) = w.commands.next() => w.answer(outcome),
            _ = sleep_until(w.held_until) => w.release(&mut sub),
            d = sub.recv(), if replay_ok => match d {
                Ok(d) => {
                    if replaying {
                        budget -= (d.end_seq() - d.first_seq()) as f64;
                    }
                    w.on_delivery(&d, &mut sub, replaying);
                }
                Err(BusError::Closed) => break,
                Err(e) => {
                    // A WAL read error (EIO, too many open files): keep going, later.
                    tracing::error!(connector = %w.name, error = %e, "Cannot read the bus; retrying in a second.");
                    bus_paused_until = Some(tokio::time::Instant::now() + BUS_RETRY);
                }
            },
            d = recv_live(&mut w.live), if room && replaying => {
                if let Some(d) = d {
                    let messages = w.encode(&d, Kind::Live, false);
                    w.delivery.queue(messages);
                }
            }
            _ = tick.tick() => {
                let now = Instant::now();
                let rate = w.cfg.replay_max_rate as f64;
                budget = (budget + rate * now.duration_since(last_refill).as_secs_f64()).min(rate);
                last_refill = now;
                w.ctx.metrics.report_backlog(&w.ctx.bus, &w.label, &sub, &mut drops_seen);
                w.check_replay(&sub, &filter);
            }
        }
    }
    // Unconfirmed data stays in the WAL and is sent after the next start.
    if w.delivery.is_connected() {
        if let Some(node) = &w.node {
            let (topic, payload) = node.death(now_ns() / 1_000_000);
            link.try_publish(&topic, 1, false, payload.into());
        }
        link.try_disconnect();
        let deadline = tokio::time::Instant::now() + GOODBYE;
        while let Ok(Some(ev)) = tokio::time::timeout_at(deadline, link.next()).await {
            if matches!(ev, LinkEvent::Disconnected | LinkEvent::Down(_)) {
                break;
            }
        }
    }
    w.metric_connected(false);
}

impl Worker {
    fn metric_connected(&self, connected: bool) {
        self.ctx.metrics.connected.get_or_create(&self.label).set(i64::from(connected));
    }

    /// Hands the link what the delivery state lets go.
    fn hand_over(&mut self, link: &Link) {
        let sent =
            self.delivery.hand_over(Instant::now(), |m| link.try_publish(&m.topic, m.qos, m.retain, m.payload.clone()));
        if sent.messages > 0 {
            let m = &self.ctx.metrics;
            m.messages_sent.get_or_create(&self.label).inc_by(sent.messages);
            m.values_sent.get_or_create(&self.label).inc_by(sent.values);
        }
    }

    fn on_link_event(&mut self, ev: LinkEvent, link: &Link, sub: &mut Subscriber, filter: &Filter) {
        match ev {
            LinkEvent::ConnAck { session_present } => {
                tracing::info!(connector = %self.name, session_present, "Connected to the MQTT broker.");
                self.metric_connected(true);
                // Sparkplug: births belong to one connection, whatever the broker kept.
                let resumed = session_present && self.node.is_none();
                if self.delivery.connected(resumed) == Session::New {
                    // The client dropped what it would have resent: read it again.
                    self.restart(sub);
                }
                self.subscribe_commands(link);
                self.check_replay(sub, filter);
            }
            LinkEvent::Confirmed(pkid) => {
                let c = self.delivery.confirmed(pkid);
                self.on_confirmed(c, sub);
            }
            LinkEvent::Written(pkid) => {
                let c = self.delivery.written(pkid);
                self.on_confirmed(c, sub);
            }
            LinkEvent::Refused { pkid, reason } => match self.delivery.refused(pkid, Instant::now()) {
                Refusal::Ignored => {}
                Refusal::Dropped => {
                    tracing::warn!(connector = %self.name, pkid, %reason, "The broker refused a live value; the replay sends it again.");
                }
                Refusal::Retry { pause } => {
                    tracing::error!(connector = %self.name, pkid, %reason, ?pause, "The broker refused a command acknowledgement; retrying it.");
                }
                Refusal::Restart { pause } => {
                    tracing::error!(connector = %self.name, pkid, %reason, ?pause, "The broker refused a message; sending again from the last confirmed reading.");
                    self.restart(sub);
                }
            },
            LinkEvent::Message { topic, payload } => self.on_command(&topic, &payload),
            LinkEvent::Down(e) => {
                if self.delivery.is_connected() {
                    tracing::warn!(connector = %self.name, error = %e, "Lost the MQTT broker; data waits in the WAL and is sent after reconnecting.");
                } else {
                    tracing::debug!(connector = %self.name, error = %e, "MQTT connection attempt failed.");
                }
                self.delivery.down();
                self.live = None;
                self.metric_connected(false);
                self.ctx.metrics.reconnects.get_or_create(&self.label).inc();
            }
            LinkEvent::Disconnected | LinkEvent::Other => {}
        }
    }

    /// Everything unconfirmed was given up: read again from the cursor, and
    /// (Sparkplug) start a new session of births ahead of it.
    fn restart(&mut self, sub: &mut Subscriber) {
        sub.rewind();
        self.live = None;
        // Held readings are read again from the cursor.
        self.held.clear();
        self.held_values = 0;
        self.held_until = None;
        if let Some(node) = self.node.as_mut() {
            let births = node.births(now_ns() / 1_000_000);
            self.delivery.queue_ahead(births.into_iter().map(|(t, p)| encode::control(t, p, Kind::Birth)).collect());
        }
    }

    fn on_confirmed(&mut self, confirmed: Option<Confirmed>, sub: &mut Subscriber) {
        let Some(c) = confirmed else { return };
        let m = &self.ctx.metrics;
        m.values_acked.get_or_create(&self.label).inc_by(c.values);
        m.ack_latency.get_or_create(&self.label).observe(c.handed_at.elapsed().as_secs_f64());
        self.ack(c.ack, sub);
    }

    fn ack(&self, end: Option<u64>, sub: &mut Subscriber) {
        if let Some(end) = end
            && let Err(e) = sub.ack(end)
        {
            tracing::warn!(connector = %self.name, error = %e, "Cannot move the bus cursor.");
        }
    }

    fn encode(&mut self, d: &Delivery, kind: Kind, historical: bool) -> Vec<super::delivery::Outgoing> {
        Self::encode_all(&mut self.encoder, self.node.as_mut(), &self.cfg, std::slice::from_ref(d), kind, historical)
    }

    /// Messages for the readings (and alarm events) of `ds`, in order.
    fn encode_all(
        encoder: &mut Encoder,
        node: Option<&mut EdgeNode>,
        cfg: &MqttConfig,
        ds: &[Delivery],
        kind: Kind,
        historical: bool,
    ) -> Vec<super::delivery::Outgoing> {
        let frames: Vec<(u64, &DataFrame)> =
            ds.iter().flat_map(|d| d.frames().filter_map(|(s, f)| f.as_data().map(|df| (s, df)))).collect();
        let mut out = encoder.readings(&frames, kind, node, historical, now_ns() / 1_000_000);
        if cfg.alarms {
            for (seq, f) in ds.iter().flat_map(|d| d.frames()) {
                if let Frame::Event(e) = f
                    && let Some(m) = encode::alarm(&cfg.topic_prefix, cfg.qos, seq, e, kind)
                {
                    out.push(m);
                }
            }
        }
        out
    }

    /// A delivery from the cursor. `replaying`: it comes from a backlog
    /// (Sparkplug flags its metrics historical).
    fn on_delivery(&mut self, d: &Delivery, sub: &mut Subscriber, replaying: bool) {
        if replaying {
            // A replay already sends full messages at its own pace.
            self.release(sub);
            let messages = self.encode(d, Kind::Data, replaying);
            let ack = self.delivery.queue_delivery(d.end_seq(), messages);
            self.ack(ack, sub);
            return;
        }
        self.hold(d);
        // Readings already published behind it go out in the same messages:
        // no waiting, and far fewer messages (publishes, acknowledgements,
        // syscalls) when the connector runs behind, as it does when the CPU
        // is contended.
        let mut behind = false;
        while self.held_values < self.cfg.batch_max_values && self.delivery.wants_readings() {
            match sub.try_recv() {
                Ok(Some(next)) => {
                    self.hold(&next);
                    behind = true;
                }
                // An error shows again at the next `recv`, which handles it.
                Ok(None) | Err(_) => break,
            }
        }
        // Lingering pays only while the connector keeps up: once it runs
        // behind, messages fill from the backlog anyway, and a timer's extra
        // wake-up on a starved CPU would only add to the data's age.
        let linger = self.linger();
        if linger.is_zero() || behind || self.held_values >= self.cfg.batch_max_values {
            self.release(sub);
        } else if self.held_until.is_none() {
            self.held_until = Some(tokio::time::Instant::now() + linger);
        }
    }

    fn hold(&mut self, d: &Delivery) {
        // Counted without running the filter a second time per frame (the
        // encoder runs it): frames it will drop count too, so a message may
        // go out a little before `batch_max_values`, never after.
        self.held_values += (d.end_seq() - d.first_seq()) as usize;
        self.held.push(d.clone());
    }

    /// How long readings may be held: the connector's own `batch_linger_ms`
    /// or the bus's tuned linger, whichever is longer; only for the formats
    /// that put many values in a message.
    fn linger(&self) -> Duration {
        match self.cfg.format {
            Format::Json => Duration::ZERO,
            Format::JsonBatch | Format::SparkplugB => {
                Duration::from_millis(self.cfg.batch_linger_ms).max(self.ctx.bus.batch_linger())
            }
        }
    }

    /// Sends what is held, as few messages as `batch_max_values` allows, and
    /// acknowledges past the last held delivery once they are confirmed.
    fn release(&mut self, sub: &mut Subscriber) {
        self.held_until = None;
        self.held_values = 0;
        let Some(end) = self.held.last().map(Delivery::end_seq) else { return };
        let held = std::mem::take(&mut self.held);
        let messages = Self::encode_all(&mut self.encoder, self.node.as_mut(), &self.cfg, &held, Kind::Data, false);
        let ack = self.delivery.queue_delivery(end, messages);
        self.ack(ack, sub);
        // Keep the vector's room for the next group.
        self.held = held;
        self.held.clear();
    }

    fn on_command(&mut self, topic: &str, payload: &[u8]) {
        let parsed = match &self.node {
            Some(node) => node.command_path(topic).map(|p| commands::parse_sparkplug(p, payload)).unwrap_or_default(),
            None => vec![commands::parse_json(topic, payload)],
        };
        for c in parsed {
            match c {
                Command::Write { id, tag, value } => {
                    if let Some(outcome) = self.commands.start(id, tag, value) {
                        self.answer(outcome);
                    }
                }
                Command::Invalid { id, error } => self.answer(Outcome::Invalid { id, error }),
                Command::Rebirth => {
                    if let Some(node) = self.node.as_mut() {
                        // Behind the readings already queued: their sequence numbers come first.
                        let births = node.births(now_ns() / 1_000_000);
                        self.delivery
                            .queue(births.into_iter().map(|(t, p)| encode::control(t, p, Kind::Birth)).collect());
                    }
                }
            }
        }
    }

    fn answer(&mut self, outcome: Outcome) {
        let (status, topic, body) = commands::answer(&self.cfg.topic_prefix, outcome);
        let label = CommandLabel { connector: self.name.clone(), status: status.into() };
        self.ctx.metrics.commands.get_or_create(&label).inc();
        self.delivery.queue_ahead(vec![encode::control(topic, body, Kind::CommandAck)]);
    }

    fn subscribe_commands(&self, link: &Link) {
        let r = match &self.node {
            Some(node) => node.command_topics().iter().try_for_each(|t| link.try_subscribe(t)),
            None => link.try_subscribe(&format!("{}/cmd/#", self.cfg.topic_prefix)),
        };
        if let Err(e) = r {
            tracing::warn!(connector = %self.name, error = %e, "Cannot subscribe to the command topics.");
        }
    }

    /// Replay mode: more backlog than a second of replay. Live values then go
    /// out alongside through a lossy subscription; the mode ends when the
    /// replay reaches where that subscription started.
    fn check_replay(&mut self, sub: &Subscriber, filter: &Filter) {
        let backlog = sub.backlog();
        let connected = self.delivery.is_connected();
        match &self.live {
            None if connected && backlog > self.cfg.replay_max_rate.max(1000) => {
                let name = format!("mqtt-{}-live", self.name);
                // Live values carry their seq too; the log reserves sequence
                // numbers ahead, so none seen here is reused after a crash.
                let opts = SubscribeOptions::lossy(name, 1 << 16).filter(filter.clone());
                if let Ok(s) = self.ctx.bus.subscribe(opts) {
                    tracing::info!(connector = %self.name, backlog, "Replaying a backlog at up to replay_max_rate; sending live values alongside.");
                    let start = s.position();
                    self.live = Some((s, start));
                }
            }
            Some((_, start)) if sub.position() >= *start || !connected => {
                tracing::info!(connector = %self.name, "Backlog replayed.");
                self.live = None;
            }
            _ => {}
        }
        self.ctx.metrics.replaying.get_or_create(&self.label).set(i64::from(self.live.is_some()));
    }
}

/// Waits until `at`; forever when nothing is held.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

async fn recv_live(live: &mut Option<(Subscriber, u64)>) -> Option<Delivery> {
    match live {
        Some((s, _)) => s.recv().await.ok(),
        None => std::future::pending().await,
    }
}
