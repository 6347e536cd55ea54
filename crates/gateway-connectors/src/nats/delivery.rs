//! The delivery state of the NATS connector: which messages wait, which are
//! published and await the stream's acknowledgement, and when the bus
//! cursor may move. A pure state machine: the worker feeds it events
//! (messages to queue, "published", "acknowledged", "failed", "connected",
//! "disconnected") and carries out what it returns (acknowledge the cursor up
//! to a sequence number, rewind the subscriber, pause). It does no I/O and
//! never reads a clock: the caller passes `now`.
//!
//! **The cursor** passes a delivery's end only when every message made of it,
//! and of every delivery before it, is acknowledged by the stream
//! ([`crate::slots`]). Acknowledgements may come in any order; one for a
//! message this state gave up changes nothing.
//!
//! **The window.** At most `max_inflight` messages are published and not
//! yet acknowledged, failed or timed out; the worker reads more from the bus
//! only while the messages in flight and those queued are fewer than that
//! (so at most one delivery's messages more wait in memory: after a failure,
//! while one message probes the stream, the queue does not fill), and a
//! backlog waits in the WAL, not in memory. While disconnected nothing is
//! handed out (the client would only buffer it).
//!
//! **A failed publish** (no responders or stream not found while a leader is
//! elected, a timed-out acknowledgement, a refusal) gives up everything not
//! acknowledged: queued messages and pending deliveries are forgotten, and
//! messages still in flight stay counted in the window until their outcome
//! arrives (at the latest when their acknowledgement times out), which then
//! changes nothing. The worker rewinds the subscriber to
//! the cursor, so everything after the last acknowledged reading is read,
//! encoded and published again, in order, with the same message ids: what
//! the stream stored already (an acknowledgement lost, a leader that
//! stored before it died) is dropped by its duplicate window, so the stream
//! holds every reading exactly once. Sending pauses (`reconnect_min_ms`,
//! doubling per failure up to `reconnect_max_ms`), then the first message
//! goes alone until it is acknowledged, so a stream without a leader is
//! probed at a growing interval instead of flooded. The pause starts over
//! from the minimum once a message gets through.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::slots::Deliveries;

/// A message to publish.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Outgoing {
    pub subject: String,
    pub payload: Bytes,
    /// `Nats-Msg-Id`: the same for the same readings however often they are sent.
    pub msg_id: String,
    /// Readings it carries (for the metrics).
    pub values: u64,
}

#[derive(Debug)]
struct Message {
    out: Outgoing,
    /// The delivery whose cursor move waits for this message.
    delivery: u64,
}

#[derive(Debug)]
struct Published {
    message: Message,
    at: Instant,
    /// `false` once a failure gave it up: its outcome changes nothing.
    current: bool,
}

/// An acknowledged message, for the metrics, and where the cursor may now go.
#[derive(Debug, PartialEq)]
pub(super) struct Acked {
    pub values: u64,
    /// When it was published (for the acknowledgement latency).
    pub published_at: Instant,
    /// Acknowledge the bus cursor up to here.
    pub ack: Option<u64>,
}

/// What to do about a failed publish.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Failure {
    /// Given up already (or unknown): nothing to do.
    Ignored,
    /// Everything unacknowledged was given up: rewind the subscriber to the
    /// cursor; sending pauses this long.
    Restart { pause: Duration },
}

/// The state; see the module docs.
#[derive(Debug)]
pub(super) struct DeliveryState {
    max_inflight: usize,
    queued: VecDeque<Message>,
    /// By the number the worker gave each message when publishing it.
    in_flight: HashMap<u64, Published>,
    next_id: u64,
    deliveries: Deliveries,
    connected: bool,
    /// After a failure: one message at a time until one is acknowledged.
    probing: bool,
    paused_until: Option<Instant>,
    pause: Duration,
    pause_min: Duration,
    pause_max: Duration,
}

impl DeliveryState {
    /// `pauses`: the first and the longest pause after a failure.
    pub fn new(max_inflight: u16, pauses: (Duration, Duration)) -> Self {
        DeliveryState {
            max_inflight: usize::from(max_inflight.max(1)),
            queued: VecDeque::new(),
            in_flight: HashMap::new(),
            next_id: 0,
            deliveries: Deliveries::default(),
            connected: false,
            probing: false,
            paused_until: None,
            pause: pauses.0,
            pause_min: pauses.0,
            pause_max: pauses.1,
        }
    }

    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// Messages published and awaiting their outcome.
    pub fn window(&self) -> usize {
        self.in_flight.len()
    }

    /// Whether the worker should read more from the bus now.
    pub fn wants_readings(&self) -> bool {
        self.connected && self.window() + self.queued.len() < self.max_inflight
    }

    /// Until when sending pauses after a failure, if it does.
    pub fn paused_until(&self) -> Option<Instant> {
        self.paused_until
    }

    /// Queues the messages made from a bus delivery ending at `end`. Returns
    /// where the cursor may go now (a delivery without messages settles at once).
    pub fn queue_delivery(&mut self, end: u64, messages: Vec<Outgoing>) -> Option<u64> {
        let delivery = self.deliveries.push(end, messages.len());
        self.queued.extend(messages.into_iter().map(|out| Message { out, delivery }));
        self.deliveries.settle()
    }

    /// The next message to publish now, if the window, the connection and
    /// any pause allow; [`DeliveryState::published`] takes it.
    pub fn next(&self, now: Instant) -> Option<&Outgoing> {
        let limit = if self.probing { 1 } else { self.max_inflight };
        let ready = self.connected && self.paused_until.is_none_or(|t| now >= t) && self.window() < limit;
        if ready { self.queued.front().map(|m| &m.out) } else { None }
    }

    /// The message [`DeliveryState::next`] gave was handed to the client;
    /// returns the number its outcome is reported under.
    pub fn published(&mut self, now: Instant) -> Option<u64> {
        let message = self.queued.pop_front()?;
        self.paused_until = None;
        self.next_id += 1;
        self.in_flight.insert(self.next_id, Published { message, at: now, current: true });
        Some(self.next_id)
    }

    /// The stream acknowledged message `id` (stored, or dropped as a duplicate).
    pub fn acked(&mut self, id: u64) -> Option<Acked> {
        let p = self.in_flight.remove(&id)?;
        if !p.current {
            return None;
        }
        self.deliveries.confirm(p.message.delivery);
        if self.probing {
            self.probing = false;
            self.pause = self.pause_min;
        }
        Some(Acked { values: p.message.out.values, published_at: p.at, ack: self.deliveries.settle() })
    }

    /// Publishing message `id` failed; see the module docs.
    pub fn failed(&mut self, id: u64, now: Instant) -> Failure {
        let Some(p) = self.in_flight.remove(&id) else { return Failure::Ignored };
        if !p.current {
            return Failure::Ignored;
        }
        self.give_up();
        let pause = self.pause;
        self.pause = (pause * 2).min(self.pause_max);
        self.paused_until = Some(now + pause);
        self.probing = true;
        Failure::Restart { pause }
    }

    /// Forgets what is queued and pending; what is in flight no longer counts.
    fn give_up(&mut self) {
        self.queued.clear();
        self.deliveries.forget();
        for p in self.in_flight.values_mut() {
            p.current = false;
        }
    }

    /// The client is connected (again).
    pub fn connected(&mut self) {
        self.connected = true;
    }

    /// The client lost its server; it reconnects by itself, and what is in
    /// flight fails or is acknowledged after that.
    pub fn disconnected(&mut self) {
        self.connected = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_millis(400);

    fn state(max_inflight: u16) -> DeliveryState {
        let mut s = DeliveryState::new(max_inflight, (MIN, MAX));
        s.connected();
        s
    }

    fn msg(id: &str) -> Outgoing {
        Outgoing { subject: "gw.a.batch".into(), payload: Bytes::new(), msg_id: id.into(), values: 1 }
    }

    /// Publishes everything the state lets go; returns (number, msg id) in order.
    fn publish(s: &mut DeliveryState, now: Instant) -> Vec<(u64, String)> {
        let mut out = Vec::new();
        while let Some(m) = s.next(now) {
            let id = m.msg_id.clone();
            out.push((s.published(now).unwrap(), id));
        }
        out
    }

    fn ids(p: &[(u64, String)]) -> Vec<&str> {
        p.iter().map(|(_, m)| m.as_str()).collect()
    }

    #[test]
    fn the_cursor_moves_only_past_deliveries_whose_messages_are_all_acknowledged() {
        let now = Instant::now();
        let mut s = state(8);
        assert_eq!(s.queue_delivery(10, vec![msg("a1"), msg("a2")]), None);
        assert_eq!(s.queue_delivery(20, vec![msg("b")]), None);
        let p = publish(&mut s, now);
        assert_eq!(ids(&p), ["a1", "a2", "b"]);
        assert_eq!(s.acked(p[2].0).unwrap().ack, None, "b is acknowledged, a is not");
        assert_eq!(s.acked(p[0].0).unwrap().ack, None, "a2 is not");
        assert_eq!(s.acked(p[1].0).unwrap().ack, Some(20), "a and b settle together");
        assert_eq!(s.acked(p[1].0), None, "an outcome twice changes nothing");
        assert_eq!(s.queue_delivery(30, Vec::new()), Some(30), "nothing to send: settled at once");
    }

    #[test]
    fn at_most_max_inflight_messages_await_their_acknowledgement() {
        let now = Instant::now();
        let mut s = state(2);
        for end in 1..=5 {
            s.queue_delivery(end, vec![msg(&end.to_string())]);
        }
        let p = publish(&mut s, now);
        assert_eq!(ids(&p), ["1", "2"]);
        assert!(!s.wants_readings(), "the window is full: the bus waits");
        s.acked(p[0].0);
        assert_eq!(ids(&publish(&mut s, now)), ["3"]);
    }

    #[test]
    fn while_one_message_probes_the_stream_the_queue_does_not_fill_from_the_bus() {
        let now = Instant::now();
        let mut s = state(4);
        s.queue_delivery(1, vec![msg("a")]);
        let p = publish(&mut s, now);
        s.failed(p[0].0, now);
        let mut end = 1;
        while s.wants_readings() {
            end += 1;
            s.queue_delivery(end, vec![msg("x")]);
            assert!(end < 100, "the bus is read without bound");
        }
        assert_eq!(end - 1, 4, "in flight and queued together stay within max_inflight");
    }

    #[test]
    fn nothing_is_published_while_disconnected_and_nothing_read() {
        let now = Instant::now();
        let mut s = state(4);
        s.disconnected();
        s.queue_delivery(1, vec![msg("a")]);
        assert!(publish(&mut s, now).is_empty());
        assert!(!s.wants_readings());
        s.connected();
        assert_eq!(ids(&publish(&mut s, now)), ["a"]);
    }

    #[test]
    fn a_failure_gives_up_everything_unacknowledged_and_probes_with_one_message_after_a_pause() {
        let now = Instant::now();
        let mut s = state(8);
        s.queue_delivery(10, vec![msg("a")]);
        s.queue_delivery(20, vec![msg("b")]);
        s.queue_delivery(30, vec![msg("c")]);
        let p = publish(&mut s, now);
        assert_eq!(s.acked(p[0].0).unwrap().ack, Some(10));
        assert_eq!(s.failed(p[1].0, now), Failure::Restart { pause: MIN });
        assert_eq!(s.acked(p[2].0), None, "c was given up with b: its acknowledgement changes nothing");
        assert_eq!(s.failed(p[2].0, now), Failure::Ignored);
        // The worker rewinds to the cursor (10) and queues b and c again.
        s.queue_delivery(20, vec![msg("b")]);
        s.queue_delivery(30, vec![msg("c")]);
        assert!(publish(&mut s, now).is_empty(), "paused");
        let later = now + MIN;
        let p = publish(&mut s, later);
        assert_eq!(ids(&p), ["b"], "one message alone until it gets through");
        assert_eq!(s.acked(p[0].0).unwrap().ack, Some(20));
        assert_eq!(ids(&publish(&mut s, later)), ["c"], "then the full window again");
    }

    #[test]
    fn pauses_double_per_failure_up_to_the_maximum_and_start_over_after_a_success() {
        let mut now = Instant::now();
        let mut s = state(8);
        let mut pauses = Vec::new();
        for _ in 0..4 {
            s.queue_delivery(1, vec![msg("a")]);
            let p = loop {
                let p = publish(&mut s, now);
                if !p.is_empty() {
                    break p;
                }
                now += Duration::from_millis(10);
            };
            match s.failed(p[0].0, now) {
                Failure::Restart { pause } => pauses.push(pause),
                Failure::Ignored => panic!("a current message failed"),
            }
        }
        assert_eq!(pauses, [MIN, MIN * 2, MAX, MAX]);
        s.queue_delivery(1, vec![msg("a")]);
        now += MAX;
        let p = publish(&mut s, now);
        s.acked(p[0].0);
        s.queue_delivery(2, vec![msg("b")]);
        let p = publish(&mut s, now);
        assert_eq!(s.failed(p[0].0, now), Failure::Restart { pause: MIN });
    }

    #[test]
    fn messages_keep_their_order_and_their_ids_across_a_restart() {
        let now = Instant::now();
        let mut s = state(3);
        let batch = |s: &mut DeliveryState| {
            s.queue_delivery(10, vec![msg("gw.up.1-5"), msg("gw.up.6-9")]);
            s.queue_delivery(20, vec![msg("gw.up.10-19")]);
        };
        batch(&mut s);
        let first = publish(&mut s, now);
        s.failed(first[1].0, now);
        batch(&mut s);
        assert!(publish(&mut s, now + MAX).is_empty(), "the given-up messages still hold the window");
        assert_eq!(s.acked(first[0].0), None);
        assert_eq!(s.failed(first[2].0, now), Failure::Ignored);
        let again = publish(&mut s, now + MAX);
        assert_eq!(ids(&again), ["gw.up.1-5"]);
        s.acked(again[0].0);
        assert_eq!(ids(&publish(&mut s, now + MAX)), ["gw.up.6-9", "gw.up.10-19"]);
    }
}
